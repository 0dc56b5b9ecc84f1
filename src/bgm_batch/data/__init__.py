"""Input data: reading capture folders and Parquet (``ingest``), the Arrow data contract
(``contract``) and the game profiles (``game_profile``)."""
