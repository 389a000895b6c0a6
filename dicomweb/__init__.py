"""DICOMweb (PS3.18) over the platform's pseudonymised DICOM store: QIDO-RS and WADO-RS.

Searches are answered from the lake's imaging index, never by scanning the store; files are
read only to return what the index does not hold (a few header attributes, metadata, frames).
Everything served is pseudonymised already: what a caller receives is exactly what the store
holds, restricted to the studies its bearer token may see.
"""
