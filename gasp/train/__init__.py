"""The training machinery: config, the recipe, the trained module, the data streams, checkpoints.

    config.py      defaults -> YAML -> dotted overrides, validated (TrainConfig)
    recipe.py      setup, train, evaluate, save: the one readable training loop
    gasp_model.py  LoRA VLM + heads; one batch -> its loss terms (the trained module)
    capture.py     gradient-carrying capture of the heads' inputs
    geo_stream.py  geometric batches sampled online from a tracks file
    geo_batch.py   a sampled sequence -> model inputs and the losses' targets
    lm_stream.py   instruction-data (LM) batches
    data.py        where the data lives; the tiny default's synthetic data, made once
    checkpoint.py  atomic, pickle-safe checkpoints and exact resume
"""
