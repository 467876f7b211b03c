"""Model families beside Demucs, from MSST checkpoints: BS-RoFormer, Mel-Band RoFormer, MDX23C (TFC-TDF v3), SCNet."""
