"""Face detection for the embedded CPU engines: MTCNN boxes + 5 landmarks, no extra packages."""
from faces.boxes import iou, nms
from faces.mtcnn import DetectorOptions, Face, FaceDetector, load_detector

__all__ = ["DetectorOptions", "Face", "FaceDetector", "iou", "load_detector", "nms"]
