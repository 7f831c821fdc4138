"""DrVoice training suite: data (CoM-Mixing), losses (CE, DPO, GSPO), Core-Cocktail merge, schedules,
metrics and one recipe per workflow (SRH pretraining, SFT, Core-Cocktail, DPO, GSPO)."""
