"""Low-level control: RobotxR1's 11-parameter Frenet MPC and the closed drive loop
(state -> MPC -> shield -> twin) every caller that drives the car shares."""
