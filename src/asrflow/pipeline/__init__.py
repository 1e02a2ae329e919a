"""The pipeline itself: the stage table both orchestrators are rendered from, the launcher,
the stage kit every entry point shares, params.yaml loading/validation, MLflow tracking, lineage."""
