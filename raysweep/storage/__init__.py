"""Where bytes live: local folders and object stores behind one path type, written atomically
(honouring the umask), read back without trust, and printed without credentials.

- :mod:`.paths`: ``StoragePath`` / ``storage_path`` over pyarrow's filesystems (``s3://``,
  ``gs://``, ``file://``), symbolic links out of a root refused, stores probed before use;
- :mod:`.atomic`: every write (temporary file, fsync, rename), stable hashes, copying trees;
- :mod:`.reading`: one reader for files others could have tampered with (size-bounded, never
  unpickled, one-line errors naming the file);
- :mod:`.provenance`: the package versions and git commit recorded with every artefact;
- :mod:`.redact`: credentials out of every printed location;
- :mod:`.checkpoints`: checkpoints loaded weights-only (the one module here that imports torch).
"""
