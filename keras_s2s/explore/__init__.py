"""The attention explorer (`keras-s2s explore`): a local web page where the loaded runs
translate one sentence side by side and show where each output token looked in the source."""
