"""Moved to ``bastion.state.files``; kept only for ``state/persist.py``, whose import is
changed in the same step (then this module goes)."""

from bastion.state.files import DATA_DIR_ENV, atomic_write, ensure_dir, file_lock, resolve_data_dir

__all__ = ["DATA_DIR_ENV", "atomic_write", "ensure_dir", "file_lock", "resolve_data_dir"]
