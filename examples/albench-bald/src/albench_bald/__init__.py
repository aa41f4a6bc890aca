"""albench-bald: BALD with MC dropout (strategy 'bald') and a small CNN with dropout (model 'mc_cnn')."""
