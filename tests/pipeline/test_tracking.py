from asrflow.pipeline.tracking import flatten, redact, safe_params


def test_flatten():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": "x"}) == {"a.b": "1", "a.c": "[1, 2]", "d": "x"}


def test_redact_hides_url_passwords_only():
    assert redact("http://alice:pw@127.0.0.1:5000/x") == "http://alice:***@127.0.0.1:5000/x"
    assert redact("see postgresql+psycopg2://u:p%40ss@db:5432/m and s3://bucket/k") == \
        "see postgresql+psycopg2://u:***@db:5432/m and s3://bucket/k"
    for plain in ("http://127.0.0.1:5000", "sqlite:///mlruns/mlflow.db", "localhost:29400", "a:b@c", "user@host:22"):
        assert redact(plain) == plain
    assert safe_params({"x.api_token": "t", "x.password": "p", "x.mirrors": "['https://u:p@h/']", "lr": "1",
                        "decode.token_beam": "0", "s3.secret_access_key": "k", "x.token": "t"}) == \
        {"x.api_token": "***", "x.password": "***", "x.mirrors": "['https://u:***@h/']", "lr": "1",
         "decode.token_beam": "0", "s3.secret_access_key": "***", "x.token": "***"}
