from kb_platform.index.retriever import reciprocal_rank_fusion


def test_items_ranked_high_by_both_lists_win() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "a", "d"]], k=60)
    assert [item for item, _ in fused] == ["a", "b", "c", "d"]
    assert fused[0][1] == 1 / 61 + 1 / 62


def test_one_list_alone_keeps_its_order() -> None:
    assert [i for i, _ in reciprocal_rank_fusion([["x", "y", "z"]])] == ["x", "y", "z"]
