"""Training: everything that runs inside ``open_clip_train.main`` when ``--loss ce_clip`` is selected.

* :mod:`.loss`      the CE-CLIP objective in plain torch (:mod:`.gather` holds its all-gathers)
* :mod:`.schedule`  when IMC and CMR come in (the gate and ramp of ``--ce-schedule``), as device state
* :mod:`.data`      the data stage: ``neg.json`` -> token tensors, webdataset and csv
* :mod:`.adapter`   the model adapter: one forward that also encodes the negatives
* :mod:`.packing`   the text layout (packed rows, index tensors), decided on the CPU in the data workers
* :mod:`.plugin`    the plugin object announced through the ``open_clip_train.plugins`` entry point
  (it follows :mod:`openclip_ce.contract`)
* :mod:`.plots`     plots of a run's loss terms, CE term weights and thresholds, from its ``train_metrics.jsonl``
* :mod:`.resume`    ``--resume latest``: the checkpoint open_clip would resume from, checked to be whole

Nothing here imports open_clip: the wiring into it lives in :mod:`openclip_ce.integration`.
"""
