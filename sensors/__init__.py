"""Sensors: the landing zone, run-failure alerts and the automation-condition sensor."""
