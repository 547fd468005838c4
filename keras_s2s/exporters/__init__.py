"""What a trained run becomes for deployment: a SavedModel for TF Serving (`savedmodel`), a
TensorFlow Lite model (`tflite`) and a CTranslate2 model (`ctranslate2`).

The choices of each exporter are here, where the command line's parser reads them without
importing TensorFlow.
"""

#: `keras-s2s tflite --quantize`: the weights' type ("dynamic": int8 weights, float math).
TFLITE_QUANTIZATIONS = ("none", "dynamic", "float16")
#: `keras-s2s export --format ctranslate2 --quantize`: the weights' type ("none": float32).
CTRANSLATE2_QUANTIZATIONS = ("none", "int8", "int8_float32", "float16")
