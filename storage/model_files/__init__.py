"""Model files: stored safely (atomic, sha256), loaded safely (allow-listing unpickler,
structural checks, a probe in a child process), and run fast (booster, forest).

May use the top level of `storage` only.
"""
