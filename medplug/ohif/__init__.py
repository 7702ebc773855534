"""OHIF, the web viewer radiologists use, showing medplug's DICOM results.

OHIF's published build (the npm package ``@ohif/app``, a prebuilt ``dist/``) is
installed at a pinned version and checked against its pinned integrity
(:mod:`medplug.ohif.install`), then served on the same origin as a DICOMweb
server, whose ``/dicom-web`` it proxies (:mod:`medplug.ohif.server`), so the
browser needs no CORS. ``make viewer`` (:mod:`medplug.ohif.demo`) loads the
sample cohort and the batch results into a private Orthanc and opens them there.
"""
