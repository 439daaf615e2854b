"""Model families (a package each), the heads tasks attach, LoRA adapters, and HF weights in
and out."""
