"""The factory cell's hard constraints: ISO/TS 15066 speed and separation, belt stop on a jam,
no release outside a bin; the shield and the guard that applies it to a FactoryTwin."""
