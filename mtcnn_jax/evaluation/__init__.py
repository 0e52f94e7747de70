"""Evaluation: WIDER FACE average precision (:mod:`.wider_ap`), five-point landmark error on
MTFL/AFLW (:mod:`.nme`), FDDB's ROC (:mod:`.fddb`), the detection JSON they read and
``detect`` writes (:mod:`.predictions`), the loop that runs a detector over a data set
(:mod:`.runner`), the plots (:mod:`.plots`) and the visual report (:mod:`.report`).
Every evaluator takes detections as ``{image path: mtcnn_jax.faces.Faces}``."""
