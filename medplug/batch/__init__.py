"""PACS-side batch inference: ``medplug batch`` over a folder or DICOMweb, and ``medplug listen``.

Studies are found (``studies``), decoded in worker processes (``loading``), run
through the plugins in batches (``processing``, ``runner``) and written with a
resumable SQLite journal (``journal``, ``writer``, ``outputs``): results.jsonl,
summary.csv, and the DICOM objects and FHIR that ``medplug.dicom_out`` builds, pushed
back by ``destinations``. See docs/batch.md.
Nothing is imported here, so ``import medplug.batch.x`` stays as cheap as ``x`` needs.
"""
