"""Imaging: DICOM studies from the landing zone to a pseudonymised store and index."""
