"""Reading a prepared test dataset back, whatever format it was built in."""


def records(builder, split: str, count=None, **kwargs) -> list:
    """The decoded examples of `split` (its first `count`) in record order, as numpy: random
    access for array_record (the pipeline's format), tf.data for a TFRecord test build."""
    file_format = str(getattr(builder.info.file_format, "value", builder.info.file_format))
    if file_format == "array_record":
        source = builder.as_data_source(split=split)
        return [source[i] for i in range(min(len(source), count) if count else len(source))]
    import tensorflow_datasets as tfds
    ds = builder.as_dataset(split=split, shuffle_files=False, **kwargs)
    return list(tfds.as_numpy(ds.take(count) if count else ds))
