"""One run: its frozen plan (`plan`), preflight, the pipeline that owns its cell and trains it
(`pipeline`), the stages of its training (`stages`: shared prefix, pruning steps, resets), the
plain epoch loop (`loop`) and the callbacks it hands each epoch to (`callbacks`: metrics,
measurements, progress, checkpoints, early stop), how its steps execute (`execution`),
checkpoints and the shared prefix (`checkpoint`), the landscape at its epochs (`landscape`),
re-measuring a finished run (`remeasure`) and the events a launcher may listen to (`events`).

May import `config` and the stage packages (data, models, prune, measure, store); never
`sweep`, `report` or `hydra_plugins`.
"""
