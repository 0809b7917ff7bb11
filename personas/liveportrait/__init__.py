"""LivePortrait-compatible take engine: the five networks (F, M, W, G, S), the loader of the
official checkpoint files, the keypoint math, the crop/paste-back and the take director.

Our own implementation of the architecture published by KwaiVGI (code MIT); facts (shapes,
constants, key names) follow the official release so its checkpoints load strictly."""
