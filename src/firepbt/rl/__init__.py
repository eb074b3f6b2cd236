"""Reinforcement-learning pieces for the paper's second experiment (section 4.2, V-MPO)."""
