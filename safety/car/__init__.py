"""The car's hard constraints: spec, clearance map, shield (with its backup brake) and the
guard that puts every command of a CarTwin through the shield and counts costs."""
