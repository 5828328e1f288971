"""Pure, typed ML functions: no Dagster, no Ray, no MLflow. Assets call them; Ray runs them."""
