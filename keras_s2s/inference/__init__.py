"""Using a trained run: translating (`translator`) and scoring (`evaluation`)."""
