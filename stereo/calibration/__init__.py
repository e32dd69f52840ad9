"""Calibrate a stereo camera, read the calibrations users already have, rectify their pairs.

The data flow, one concern per module:

| module           | job                                                                          |
|------------------|------------------------------------------------------------------------------|
| ``rig``          | :class:`StereoRig`, the one representation (K, D per view, R, T, R1 R2 P1 P2 Q) |
| ``storage``      | our calibration file: OpenCV FileStorage YAML, written atomically; read back  |
| ``readers``      | every supported file (OpenCV YAML/XML, ROS camera_info pair, KITTI, Middlebury, ETH3D) -> StereoRig |
| ``board``        | chessboard corners with sub-pixel refinement, board coverage                 |
| ``calibrate``    | chessboard pairs -> StereoRig + report; refuses an untrustworthy result      |
| ``rectify``      | :class:`Rectifier`: maps built once, ``rectify(left, right)``                 |
| ``diagnostics``  | swapped views, vertical misalignment after rectification (image size: ``rectify``) |

Everything is parsed, never evaluated: OpenCV files through ``cv2.FileStorage``, ROS YAML through
PyYAML's safe loader, text formats line by line.
"""
