"""Every retrieval method behind one interface (`base.Method`): DGI and each baseline fit, rank, save and
load alike; `registry` builds one from a benchmark entry or loads a saved one."""
