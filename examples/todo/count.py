from stratus import db, StratusError


def handler(event, context):
    """Keeps counters/OWNER.n at the number of OWNER's to-dos."""
    data = event["data"]
    doc = data["after"] or data["before"]
    step = 1 if event["type"].endswith(".created") else -1
    counter = db.collection("counters").doc(doc["owner"])
    for _ in range(5):
        try:
            counter.update(inc={"n": step})
            return
        except StratusError as err:
            if err.code != "no_such_document":
                raise
        try:
            counter.create({"owner": doc["owner"], "n": step})
            return
        except StratusError as err:
            if err.code != "document_exists":
                raise
    raise RuntimeError("the counter kept changing")
