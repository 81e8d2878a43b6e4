"""What the stages and the search share while they run: the Ray session
(:mod:`.ray_session`), the pre-training driver that starts one ``TorchTrainer`` per run
(:mod:`.pretrain_driver`), progress lines (:mod:`.progress`), failures in one line
(:mod:`.failures`) and interruptible threads (:mod:`.concurrency`).
"""
