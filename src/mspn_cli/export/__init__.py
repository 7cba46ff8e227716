"""The export room: MegEngine networks as `.mge` graphs (MegEngine Lite) or ONNX.

    trace     tracing and dumping (TracedGraph)
    specs     input specs (declared by the caller or the model)
    mge       `.mge` export
    onnx/     the ONNX converter, operator handlers by family
    verify    comparing an exported graph with MegEngine
    cache     graph-cache keys and the on-disk cache

Nothing here imports a runtime backend; the backends import from here.
"""
