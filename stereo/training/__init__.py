"""Training and evaluation pieces: loss, metrics, evaluation protocols, the LightningModule."""
