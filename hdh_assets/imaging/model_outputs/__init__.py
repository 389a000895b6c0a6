"""Model outputs: masks a research project's model predicts, delivered under
``landing/model_outputs/<project>/<model>/<series>.<ext>``, stored as DICOM SEG objects over the
pseudonymised source series and compared with the project's reference segmentations.

- ``deliveries``: finding the delivered files, the geometry of their series (from the imaging
  index), reading and checking each mask, quarantining what cannot be used;
- ``segmentation``: masks to SEG with highdicom, stored through the DICOMweb service's STOW core
  (same Annex E verification, reference resolution and indexing as any derived object);
- ``agreement``: Dice, HD95 and volume differences per series and segment;
- ``assets``: the Dagster assets ``imaging/model_segmentations``, ``imaging/model_agreement`` and
  ``imaging/model_output_quarantine``.
"""
