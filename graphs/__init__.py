"""One module per job type; each `run(ctx)` writes its steps out in order."""
from __future__ import annotations

from core.jobs import JobType
from graphs import lipsync_only, persona_build, video_render

GRAPHS = {
    JobType.lipsync_only: lipsync_only.run,
    JobType.video_render: video_render.run,
    JobType.persona_build: persona_build.run,
}
