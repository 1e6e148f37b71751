"""Calibration engines: in memory, block by block (sequential), across ranks; resume; storage."""
