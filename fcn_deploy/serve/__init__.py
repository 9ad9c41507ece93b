"""``fcn-deploy serve``: a real Triton Inference Server hosting a fcn-deploy model on this machine.

* :mod:`fcn_deploy.serve.install`: where the ``tritonserver`` binary comes from (the one
  pip-installable Triton, inside NVIDIA's PyTriton wheel, unpacked without its dependencies);
* :mod:`fcn_deploy.serve.server`: the model repository it serves, the process, readiness and stop;
* :mod:`fcn_deploy.serve.triton_model`: the Python-backend model that runs our backends inside Triton.

Clients use ``--model triton://HOST:PORT/NAME`` (:mod:`fcn_deploy.runtime.backends.triton`).
"""
