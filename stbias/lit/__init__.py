"""LightningModules and data modules: the classifier (``classifier``), its data (``train_data``)."""
