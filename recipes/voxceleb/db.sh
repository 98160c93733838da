# Corpus locations for this recipe (like ESPnet's db.sh). Edit these, or override on the command
# line (recipes/voxceleb/run.sh --voxceleb1 /path ...).
VOXCELEB1=${VOXCELEB1:-/data/corpora/VoxCeleb1}        # wav/idXXXXX/<video>/<nnnnn>.wav + the trial lists
VOXCELEB2_DEV=${VOXCELEB2_DEV:-/data/corpora/VoxCeleb2/dev}  # aac/idXXXXX/<video>/<nnnnn>.m4a (or wav/ after conversion)
MUSAN=${MUSAN:-/data/corpora/musan}                    # music/ noise/ speech/
RIRS_NOISES=${RIRS_NOISES:-/data/corpora/RIRS_NOISES}  # simulated_rirs/ real_rirs_isotropic_noises/
# The paper's other test conditions (each optional: a set whose folder is missing is skipped with a
# warning, and RESULTS.md says so). Layouts: docs/conventions.md §VoxCeleb test sets.
VOXSRC23=${VOXSRC23:-/data/corpora/VoxSRC2023_val}    # VoxSRC2023_val.txt + the audio it names (with VoxCeleb1)
VCMIX=${VCMIX:-/data/corpora/VCMix}                   # vcmix_test.txt + its VoxConverse segments (with VoxCeleb1)
VOICES=${VOICES:-/data/corpora/VOiCES_2019}           # dev-enroll.lst, dev-trial-keys.lst, sid_dev/*.wav
