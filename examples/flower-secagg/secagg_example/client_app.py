"""secagg_example: the ClientApp, written as for plain FedAvg; `secagg_mod()` makes the node answer through SecAgg+.

Flower starts a fresh `flwr-clientapp` process for every message a SuperNode receives, and most messages of a
secure round are SecAgg+ stages that never reach `train` or `evaluate`. So this module imports only Flower and
secagg at the top; torch and scikit-learn (through `secagg_example.task`) are imported inside the functions
that use them, and a stage message does not pay for them.
"""

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from secagg.flower import secagg_mod

app = ClientApp()
secure = secagg_mod(app=app)  # with the app, a train message also runs `evaluate` on the model it received


@app.train(mods=[secure])
def train(msg: Message, context: Context) -> Message:
    """Train the received model on this node's partition; reply with the new weights and the metrics."""
    from secagg_example.task import Net, load_data
    from secagg_example.task import train as train_fn

    model = Net()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    config = msg.content["config"]
    partition_id = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config["num-partitions"])
    trainset, _ = load_data(partition_id, num_partitions, int(config["batch-size"]))
    seed = int(config["seed"]) * 100_003 + int(config["server-round"]) * 1_009 + partition_id
    train_loss = train_fn(
        model, trainset, int(config["local-epochs"]), float(config["lr"]), int(config["batch-size"]), seed
    )
    metrics = MetricRecord({"train_loss": train_loss, "num-examples": len(trainset)})
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
    return Message(content=content, reply_to=msg)


@app.evaluate(mods=[secure])
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received model on this node's validation split."""
    from secagg_example.task import Net, load_data
    from secagg_example.task import test as test_fn

    model = Net()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    partition_id = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config["num-partitions"])
    _, valset = load_data(partition_id, num_partitions, 32)
    eval_loss, eval_acc = test_fn(model, valset)
    metrics = MetricRecord({"eval_loss": eval_loss, "eval_acc": eval_acc, "num-examples": len(valset)})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
