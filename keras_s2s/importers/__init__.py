"""Importers of pretrained checkpoints from other toolkits, written as ordinary run directories
(so `translate`, `evaluate`, `export`, `tflite` and `serve` take them unchanged)."""
