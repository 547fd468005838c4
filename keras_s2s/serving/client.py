"""A small client for TF Serving's REST or gRPC API: works with tensorflow_model_server and
keras-s2s serve.

REST (http:// URLs) uses the standard library only (http.client, urllib), so it runs anywhere
Python does; gRPC (grpc://HOST:PORT) needs `keras-s2s[serve]` (grpcio, tensorflow-serving-api).
"""

import http.client
import json
import threading
import urllib.error
import urllib.parse
import urllib.request


class ServingRequestError(Exception):
    """A request the server refused or could not answer.

    `status` is the HTTP status, or over gRPC the status code name ("NOT_FOUND"); None when the
    server could not be reached. `message` is the server's `error` text (or the raw body when it
    is not TF Serving's JSON), or the gRPC status details.
    """

    def __init__(self, status, message, url):
        protocol = "HTTP" if isinstance(status, int) else "gRPC"
        super().__init__(
            f"{protocol} {status} from {url}: {message}" if status is not None
            else f"{url}: {message}"
        )
        self.status = status
        self.message = message
        self.url = url


class Client:
    """One model on one server: `Client("http://127.0.0.1:8501", "dates", label="stable")`, or
    over gRPC `Client("grpc://127.0.0.1:8500", "dates")` (status, metadata, predict, translate).

    `version` or `label` pins the version used by predict/classify/regress/metadata; by default the
    server picks its latest. `timeout` is in seconds, per request.

    Over REST each thread keeps one connection open to the server (HTTP keep-alive): a new
    TCP connection per request would cost every request a handshake and the server a
    connection set-up. Through a proxy (`http_proxy`...) each request goes through urllib.
    """

    def __init__(self, base_url, model_name, version=None, label=None, timeout=30.0):
        if version is not None and label is not None:
            raise ValueError(
                f"Give a version or a label, not both (got version={version!r}, label={label!r})"
            )
        self.base_url = base_url.rstrip("/")
        self.model_name = model_name
        self.version = version
        self.label = label
        self.timeout = timeout
        self._grpc = None
        self._connections = threading.local()  # `connection`: this thread's, when open
        scheme, _, target = self.base_url.partition("://")
        if scheme == "grpc":
            from keras_s2s.serving.grpc_api import GrpcConnection

            self._grpc = GrpcConnection(target, model_name, version, label, timeout)

    @property
    def model_url(self):
        url = f"{self.base_url}/v1/models/{urllib.parse.quote(self.model_name, safe='')}"
        if self.version is not None:
            return f"{url}/versions/{int(self.version)}"
        if self.label is not None:
            return f"{url}/labels/{urllib.parse.quote(self.label, safe='')}"
        return url

    def status(self):
        """The model status: {"model_version_status": [{"version", "state", "status"}, ...]}."""
        if self._grpc is not None:
            return self._over_grpc(self._grpc.status)
        return self._request("GET", self.model_url)

    def metadata(self):
        """{"model_spec": ..., "metadata": {"signature_def": ...}} of the selected version (over
        gRPC, `signature_def` also holds the packed message's "@type")."""
        if self._grpc is not None:
            return self._over_grpc(self._grpc.metadata)
        return self._request("GET", f"{self.model_url}/metadata")

    def predict(self, instances=None, inputs=None, signature_name=None):
        """Row (`instances`) or columnar (`inputs`) predict; returns `predictions` or `outputs`."""
        if (instances is None) == (inputs is None):
            raise ValueError(
                "Give exactly one of instances (row format) or inputs (columnar format)"
            )
        if self._grpc is not None:
            return self._over_grpc(self._predict_over_grpc, instances, inputs, signature_name)
        body = {"instances": instances} if instances is not None else {"inputs": inputs}
        if signature_name is not None:
            body["signature_name"] = signature_name
        response = self._request("POST", f"{self.model_url}:predict", body)
        return response["predictions" if instances is not None else "outputs"]

    def classify(self, examples, context=None, signature_name=None):
        """Classify examples (dicts of features); returns `results`: per example,
        [[label, score], ...]."""
        return self._examples_request("classify", examples, context, signature_name)

    def regress(self, examples, context=None, signature_name=None):
        """Regress examples (dicts of features); returns `results`: one float per example."""
        return self._examples_request("regress", examples, context, signature_name)

    def translate(self, texts, signature_name=None, **settings):
        """Translates a list of strings with the model's serving_default signature, or with
        `signature_name` and its scalar `settings` (a keras-s2s export's `beam`: beam_width,
        alpha, n_best; `sample`: temperature, top_k, top_p, seed).

        Returns, per text, {"translation": str, "score": float} when the model also outputs
        `scores`, else the translated string. With several hypotheses per text (`beam` with
        n_best > 1) the next best follow, best first, in the first's "alternatives".
        """
        if isinstance(texts, str):
            raise TypeError(
                f"texts must be a list of strings, got the single string {texts!r}; wrap it in a "
                "list"
            )
        texts = list(texts)
        if not texts:
            return []
        if signature_name is not None:
            outputs = self.predict(inputs={"inputs": texts, **settings},
                                   signature_name=signature_name)
            return [_hypotheses(translations, scores)
                    for translations, scores in zip(outputs["outputs"], outputs["scores"])]
        results = []
        for prediction in self.predict(instances=texts):
            if isinstance(prediction, dict) and "scores" in prediction:
                results.append(
                    {"translation": prediction["outputs"], "score": prediction["scores"]}
                )
            elif isinstance(prediction, dict):
                results.append(prediction["outputs"])
            else:
                results.append(prediction)
        return results

    def _predict_over_grpc(self, instances, inputs, signature_name):
        """A Predict shaped as REST's answer: `instances` (rows) -> `predictions` (rows),
        `inputs` (columns) -> `outputs` (the bare value when there is one output)."""
        if instances is not None:
            input_names = list(self._grpc.input_dtypes(signature_name))
            if len(input_names) == 1:
                inputs = {input_names[0]: instances}
            else:
                inputs = {name: [row[name] for row in instances] for name in input_names}
        elif not isinstance(inputs, dict):
            (name,) = self._grpc.input_dtypes(signature_name)
            inputs = {name: inputs}
        outputs = self._grpc.predict(inputs, signature_name)
        if len(outputs) == 1:
            (value,) = outputs.values()
            return value
        if instances is None:
            return outputs
        rows = len(next(iter(outputs.values())))
        return [{name: value[row] for name, value in outputs.items()} for row in range(rows)]

    def _over_grpc(self, method, *args):
        from keras_s2s.serving.grpc_api import GrpcRequestError

        try:
            return method(*args)
        except GrpcRequestError as error:
            raise ServingRequestError(error.code, error.message, self.base_url) from None

    def _examples_request(self, verb, examples, context, signature_name):
        if self._grpc is not None:
            raise ValueError(f"{verb} is served over REST only here: use an http:// URL")
        body = {"examples": examples}
        if context is not None:
            body["context"] = context
        if signature_name is not None:
            body["signature_name"] = signature_name
        return self._request("POST", f"{self.model_url}:{verb}", body)["results"]

    def _request(self, method, url, body=None):
        data = None if body is None else json.dumps(body).encode("utf-8")
        try:
            status, reason, text = self._send(method, url, data)
        except (OSError, http.client.HTTPException) as error:
            raise ServingRequestError(
                None, f"cannot reach the server: {getattr(error, 'reason', error)}", url
            ) from None
        if status >= 400:
            try:
                message = json.loads(text)["error"]
            except (ValueError, KeyError, TypeError):
                message = text.strip() or reason
            raise ServingRequestError(status, message, url)
        return json.loads(text)

    def _send(self, method, url, data):
        """(status, reason, body text) of one request: on this thread's open connection to the
        server (opened again if the server closed it while it was idle), or by urllib through
        a proxy."""
        parts = urllib.parse.urlsplit(url)
        headers = {"Content-Type": "application/json"}
        if parts.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(
                parts.hostname):
            request = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return response.status, response.reason, response.read().decode("utf-8")
            except urllib.error.HTTPError as error:
                return error.code, error.reason, error.read().decode("utf-8", "replace")
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        connection = getattr(self._connections, "connection", None)
        reused = connection is not None
        if connection is None:
            kind = http.client.HTTPSConnection if parts.scheme == "https" else (
                http.client.HTTPConnection)
            connection = kind(parts.hostname, parts.port, timeout=self.timeout)
        self._connections.connection = None  # until this request has its answer
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            answer = response.status, response.reason, response.read().decode("utf-8", "replace")
        except (ConnectionError, http.client.BadStatusLine):
            connection.close()
            if reused:  # the server closed it while it was idle: once more on a new one
                return self._send(method, url, data)
            raise
        except BaseException:
            connection.close()
            raise
        self._connections.connection = connection
        return answer


def _hypotheses(translations, scores):
    """One text's outputs and scores (one each, or lists best first) → its result dict."""
    if not isinstance(translations, list):
        return {"translation": translations, "score": scores}
    best, *alternatives = [{"translation": translation, "score": score}
                           for translation, score in zip(translations, scores)]
    return {**best, "alternatives": alternatives}
