"""What a trained run becomes for deployment: a SavedModel for TF Serving (`savedmodel`), a
TensorFlow Lite model (`tflite`) and a CTranslate2 model (`ctranslate2`)."""
