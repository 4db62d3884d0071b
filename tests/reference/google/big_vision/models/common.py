"""Not vendored: big_vision/models/common.py is used by models/vit.py's load() only, which the tests never call."""
