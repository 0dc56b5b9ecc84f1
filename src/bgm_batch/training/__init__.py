"""Fine-tuning: instruction pairs (``pairs``: teacher and reverse generation) and LoRA training
with peft (``finetune``)."""
