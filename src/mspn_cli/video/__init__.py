"""Video: the frame loop around the one pipeline (key-frame detection, tracking, smoothing).

    from mspn_cli.io.video_source import VideoSource
    from mspn_cli.pipeline import PosePipeline
    from mspn_cli.video import VideoPoseRunner, VideoSettings, frame_line

    pipeline = PosePipeline.from_settings(run_settings)
    runner = VideoPoseRunner(pipeline, VideoSettings(det_every=5, smooth="oneeuro"))
    with VideoSource("clip.mp4") as source:
        for poses in runner.run(source.frames(), fps=source.fps):
            print(frame_line(poses, source.name, source.spec, source.fps))

No Typer or Rich here; `cli/video_run.py` turns options into these calls.
"""

from mspn_cli.config import VideoConfig, load_video_config
from mspn_cli.video.settings import SMOOTHING_ONLINE, VideoSettings
from mspn_cli.video.keyframes import carried_detections, confident_joint_boxes, joint_confidences
from mspn_cli.video.runner import FramePoses, VideoPoseRunner, frame_line, frame_records

__all__ = [
    "SMOOTHING_ONLINE",
    "FramePoses",
    "VideoConfig",
    "VideoPoseRunner",
    "VideoSettings",
    "carried_detections",
    "confident_joint_boxes",
    "frame_line",
    "frame_records",
    "joint_confidences",
    "load_video_config",
]
