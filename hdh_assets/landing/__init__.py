"""The landing zone: batches providers drop under ``HDH_HOME/landing/<source>/<batch>/``.

Shared by every source (imaging, clinical, claims): when is a batch complete, what does it hold.
"""
