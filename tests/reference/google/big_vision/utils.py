"""Not vendored: big_vision/utils.py (1,478 lines) is used by models/vit.py's load() only, which the tests never
call; they build parameters themselves and run the model's apply()."""
