# Helpers shared by the rules: results paths, the sample sheet, input functions.
# (filled in by the foundation work; the names below are the contract the rules rely on)
#   R                 results/<dataset.name>
#   SLIDE_IDS         list of slide ids
#   slide_path(wc)    input function: path of slide wc.slide
#   FEATURES_DIR      R/features/<features.encoder>
#   TASK              hmf.tasks.Task of the dataset
