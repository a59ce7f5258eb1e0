"""openclip-ce: CE-CLIP compositional hard-negative training as a plugin for OpenCLIP.

Layers (each its own module, see README "Layout"):

* :mod:`openclip_ce.negatives`      the on-disk negatives format shared by generation and training
* :mod:`openclip_ce.loss`           the CE-CLIP loss, plain torch (knows nothing of open_clip)
* :mod:`openclip_ce.data`           the training data stage (webdataset / csv), plain torch + webdataset
* :mod:`openclip_ce.openclip_compat` the only module touching open_clip internals
* :mod:`openclip_ce.plugin`         the plugin object announced through the ``open_clip_train.plugins`` entry point
* :mod:`openclip_ce.bootstrap`      the import hook installed by ``openclip_ce_bootstrap.pth``
* :mod:`openclip_ce.generate`, :mod:`openclip_ce.make_shards`  offline negative generation
* :mod:`openclip_ce.evaluate`       compositional benchmarks
* :mod:`openclip_ce.cli`            the ``openclip-ce`` command
"""

__version__ = "0.1.0"
