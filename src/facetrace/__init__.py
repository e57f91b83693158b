"""facetrace: find every face in a photo and search galleries of reference photos.

The public surface is re-exported here (and pinned by ``tests/test_public_api.py``):
``Facetrace`` (one method per user operation), ``Settings``, the pipeline's ``Analyzer``,
the records it returns, the score convention and the error hierarchy. A face match is a
lead to be verified by a trained examiner, never an identification.
"""

from facetrace.app import Facetrace
from facetrace.embed import cosine
from facetrace.errors import FacetraceError
from facetrace.pipeline import Analyzer
from facetrace.records import AnalysedImage, Box, Face, Quality
from facetrace.search import LEAD_NOTICE, SAME_PERSON_THRESHOLD
from facetrace.settings import Settings

__all__ = [
    "LEAD_NOTICE",
    "SAME_PERSON_THRESHOLD",
    "AnalysedImage",
    "Analyzer",
    "Box",
    "Face",
    "FacetraceError",
    "Facetrace",
    "Quality",
    "Settings",
    "cosine",
]
__version__ = "0.1.0"
