"""The names that options choose from (attention methods, precisions, backends, formats, pooling modes).

Each is declared here once and imported by the module that implements it; this module imports nothing, so
the command line builds a subcommand's ``--help`` (its ``choices``) without importing torch.
"""

from __future__ import annotations

ATTENTION_METHODS = ("rollout", "last")  # attention.py
INFERENCE_PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")  # inference.py
INFERENCE_BACKENDS = ("auto", "eager", "compile", "onnxruntime", "openvino")  # inference.py
FEATURE_POOLS = ("default", "token", "avg", "map", "none")  # features.py: the model's global_pool, or its own
FEATURE_POOL_ALIASES = {"cls": "token", "tokens": "none"}  # vitkit 0.1's names, still accepted
FEATURE_PRECISIONS = ("fp32", "bf16", "fp16", "int8", "auto")  # features.py
EXPORT_PRECISIONS = ("fp32", "bf16", "int8")  # export.py
EXPORT_FORMATS = ("onnx", "torch-export")  # export.py
GRAPH_EXPORT_FORMATS = (*EXPORT_FORMATS, "openvino")  # deploy.py: export.py's and the OpenVINO IR
OPTIMIZE_BACKENDS = ("openvino", "onnxruntime")  # deploy.py: the runtimes of calibrated int8
ONNX_OPSETS = (7, 20)  # the opsets torch's TorchScript-based ONNX exporter writes (torch.onnx._constants)
WEIGHT_FORMATS = ("vitkit", "timm", "hf", "npz", "open_clip", "dinov3")  # weights/families.py: the checkpoint families
WRITTEN_FORMATS = ("vitkit", "timm", "hf", "npz")  # those save_pretrained / convert --to write (the rest: read)
# zeroshot.py: published image-text models by name (their transformers folders on the Hugging Face Hub), and
# the names of the template sets in data/zero_shot_templates.json
ZERO_SHOT_MODELS = {
    "siglip_base_patch16_224": "google/siglip-base-patch16-224",
    "siglip_base_patch16_384": "google/siglip-base-patch16-384",
    "siglip_large_patch16_256": "google/siglip-large-patch16-256",
    "siglip_so400m_patch14_384": "google/siglip-so400m-patch14-384",
    "clip_vit_base_patch32": "openai/clip-vit-base-patch32",
    "clip_vit_base_patch16": "openai/clip-vit-base-patch16",
    "clip_vit_large_patch14": "openai/clip-vit-large-patch14",
}
TEMPLATE_SETS = ("imagenet", "imagenet-simple")
AUGMENT_POLICIES = ("none", "trivial", "randaugment")  # data/augment.py
MULTILABEL_LOSSES = ("bce", "asl")  # multilabel.py
LORA_TARGETS = ("qkv", "q", "k", "v", "proj", "fc1", "fc2")  # lora.py: the linears an adapter can wrap
EVAL_SPLITS = ("val", "train", "all")  # training/evaluation.py
