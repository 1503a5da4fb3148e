"""Policies that are not learned language models: the scripted car expert and fixed
parameters, the scripted and colour-statistics inspectors, SB3 policies as `Policy`s."""
