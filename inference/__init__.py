"""lightwork.inference: trained fold models applied to new scans, in-process (pure numpy/torch).

    ensemble  a split's fold models, the run's recipe and threshold, from a run folder or a package
    package   the `.lwpkg` file: one split's models, recipe, threshold, version and checksums
    predict   inputs -> cases, one case through recipe, ensemble and back to its own grid, outputs
              (NIfTI/PNG maps and masks) and the scores table

`lightwork.distributed.predict` runs `predict.predict_case` over a folder or bucket with Ray Data.
"""
